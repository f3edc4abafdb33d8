"""Benchmarks for the media stream consumer (not part of the package or the test suite)."""
