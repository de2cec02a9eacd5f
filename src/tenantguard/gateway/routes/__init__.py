"""The gateway's routers. Every `/api` route depends on `Authorize(action)`."""
