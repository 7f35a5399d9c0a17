"""The HTTP API: management routes, API-key auth, problem+json errors, OpenAPI."""
