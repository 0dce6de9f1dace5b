"""Talking to an AUTOMATIC1111 WebUI: client, executor and a simulator for demos and tests."""
