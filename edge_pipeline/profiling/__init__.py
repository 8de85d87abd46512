"""Device profiles, transports and the on-device agent that measures TFLite latency and memory."""
