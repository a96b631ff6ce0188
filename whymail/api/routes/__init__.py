"""Every API route; importing this package registers them on `api`."""

from whymail.api.spec import Api

api = Api()

from whymail.api.routes import auth, health  # noqa: E402,F401  (registration by import)
