"""Every API route; importing this package registers them on `api`."""

from whymail.api.spec import Api

api = Api()

from whymail.api.routes import (  # noqa: E402,F401  (registration by import)
    admin,
    auth,
    health,
    mail,
    mail_extra,
    metrics,
    notifications,
    ops,
    packages,
    search,
)
