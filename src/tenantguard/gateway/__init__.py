"""The gateway service: FastAPI, thin middleware, one problem handler, routers."""

from tenantguard.gateway.app import create_app

__all__ = ["create_app"]
