"""Tenant data as an agent platform stores it: tenants, memory, runs. Every write audited."""
