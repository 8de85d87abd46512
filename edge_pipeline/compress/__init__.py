"""The compression algorithms as plain functions on nn.Module: no file I/O, no CLI."""
