"""Quotas, rate limits and budgets: a pure core (`core`) and two stores behind one port
(`stores`: PostgreSQL by default, Redis for many gateway replicas)."""
