"""Signed model parameters: sign, verify, fetch (sources and archives), with their own errors.

One module (`signing`) does signature verification for the CLI, the init container and the server.
"""
