"""The one egress guard: every outbound HTTP call of tenantguard goes through
`egress.transport.egress_client`, whose transport checks (`egress.check`) and pins each
connection."""
