"""The REST API (Sanic): routes, auth, middleware and the OpenAPI document, without Ray."""
