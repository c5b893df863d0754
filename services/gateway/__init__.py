"""Gateway: the HTTP API for providers, tenants and operators, with API keys and roles."""
