"""The HTTP API and web console (``stablenew serve``): the producer's submit, status, cancel and
retry over HTTP, queue control, live progress as Server-Sent Events, the pictures a job made, and a
small server-rendered console at ``/``. Everything goes through the same producer functions as the
CLI; the modules here only translate HTTP to them and back.
"""

from ._app import create_app
from ._settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
