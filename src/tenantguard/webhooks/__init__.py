"""Webhooks in and out: signatures (`signing`, pure), outbound endpoints and deliveries, and
the verification of inbound ones."""
