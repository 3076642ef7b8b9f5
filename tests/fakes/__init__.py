"""Loopback fakes of the Hugging Face Hub and the OpenAI Images API, for offline tests."""
