"""Every API route; importing this package registers them on `api`."""

from whymail.api.spec import Api

api = Api()

from whymail.api.routes import admin, auth, health, mail, metrics, notifications  # noqa: E402,F401  (registration)
