"""Exit statuses, the user-facing error and the runner's one print."""

BAD_INPUT, FAILED = 2, 1


class RunError(Exception):
    """A message for the user and the exit status."""

    def __init__(self, message, status=BAD_INPUT):
        super().__init__(message)
        self.status = status


class ServerGone(RunError):
    """The server stopped answering (connection refused or reset, websocket closed): the job did not
    fail on its own account and may be retried on another server."""

    def __init__(self, url, why):
        super().__init__(f"server {url} is gone ({why})", FAILED)
        self.url = url


def say(message=""):
    print(message, flush=True)
