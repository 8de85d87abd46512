"""Deployment: releases of an export bundle on devices, verified there, switched atomically.

On a device: `<root>/<app>/releases/<id>/` (the model file of one precision, labels.txt,
metadata.json, the runner `edge_predict.py`, the verification images under `samples/`, and
`release.json`) and `<root>/<app>/current`, a symlink renamed over the old one only after the
release was verified. A deploy uploads into a hidden `releases/.incoming-<id>/`, checks every file's
sha256 there, runs the runner on the bundle's test images and compares its outputs with this
host's for the same files; any failure removes the upload and leaves `current` alone.

Modules: `bundle` (reading an export folder; the runner, samples and android/ files the export
writes), `names` (what a release id, an app and a root may be), `shell` (the one POSIX-shell
program that changes a device's release tree), `targets` (running it and the runner through each
transport: local, qemu, ssh, adb), `verify` (device vs host outputs), `releases` (deploy, list,
rollback, remove, keep), `edge_predict` (the standalone runner). Nothing here is imported by the
CLI's fast paths.
"""
