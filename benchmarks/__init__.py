"""Measurement code: benchmarks and the load test. The Space never imports these."""
