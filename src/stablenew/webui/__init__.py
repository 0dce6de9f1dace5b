"""Talking to an AUTOMATIC1111 WebUI: client and executor (the simulator for demos and tests is
:mod:`stablenew.simulator`)."""
