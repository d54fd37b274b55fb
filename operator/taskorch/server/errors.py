"""What the server's actions and Kubernetes calls raise, each mapped to one HTTP status by the
app (app.py); 401 and 403 are auth.py's Unauthenticated and Forbidden."""


class Missing(Exception):
    """No such task or object (404)."""


class Conflict(Exception):
    """The action does not apply to the object as it is (409)."""


class Invalid(Exception):
    """The API server refused a change as invalid (422)."""


class KubeUnavailable(Exception):
    """The Kubernetes API cannot answer now (503)."""
