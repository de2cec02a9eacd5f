"""Which tenantguard control answers which requirement of the frameworks auditors ask about.

Data, in one place, shipped in every evidence pack as `controls.json`: for each control, what
it does, where its evidence is in the pack, and the requirements it addresses in SOC 2 (Trust
Services Criteria CC6, CC7), ISO/IEC 42001 (Annex A controls), the EU AI Act (Art. 10 data
governance, Art. 12 record-keeping) and the NIST AI RMF (functions and categories). It states
what the evidence shows, never a certification.
"""

from __future__ import annotations

from typing import Any

CONTROLS: tuple[dict[str, Any], ...] = (
    {
        "control": "tenant-isolation",
        "what": "Forced row-level security on every tenant table; composite foreign keys; "
        "no service role that bypasses RLS (the doctor checks on every start).",
        "evidence": ["doctor.json", "security_tests.json"],
        "soc2": ["CC6.1", "CC6.3"],
        "iso42001": ["A.7.2", "A.10.3"],
        "eu_ai_act": ["Art. 10(5)"],
        "nist_ai_rmf": ["GOVERN 1.4", "MANAGE 2.4"],
    },
    {
        "control": "identity-and-access",
        "what": "Roles x actions as data; MFA by policy and always for operators; step-up for "
        "sensitive actions; revocable sessions; hashed, scoped API keys.",
        "evidence": ["policies.json", "security_tests.json"],
        "soc2": ["CC6.1", "CC6.2", "CC6.3"],
        "iso42001": ["A.4.6"],
        "eu_ai_act": [],
        "nist_ai_rmf": ["GOVERN 2.1"],
    },
    {
        "control": "encryption-and-keys",
        "what": "Envelope encryption under per-tenant data keys wrapped by a KEK (file or HSM); "
        "rotation; crypto-shredding; platform signing keys rotated with overlap.",
        "evidence": ["key_events.jsonl", "keys.json"],
        "soc2": ["CC6.1", "CC6.7"],
        "iso42001": ["A.7.2"],
        "eu_ai_act": ["Art. 10(5)"],
        "nist_ai_rmf": ["MANAGE 2.4"],
    },
    {
        "control": "tamper-evident-audit",
        "what": "Every action audited in the same transaction (fail closed); per-tenant hash "
        "chain and RFC 6962 Merkle tree; signed, witnessed checkpoints; inclusion proofs.",
        "evidence": ["audit/segment.jsonl", "audit/checkpoint.note", "audit/proofs.json"],
        "soc2": ["CC7.2", "CC7.3"],
        "iso42001": ["A.6.2.8"],
        "eu_ai_act": ["Art. 12(1)", "Art. 12(2)"],
        "nist_ai_rmf": ["MEASURE 2.8", "MANAGE 4.1"],
    },
    {
        "control": "operator-access",
        "what": "Vendor staff read customer data only with the tenant's opt-in; every read "
        "audited in the tenant's chain first (no audit row, no read); refusals recorded.",
        "evidence": ["audit/segment.jsonl"],
        "soc2": ["CC6.1", "CC6.6", "CC7.2"],
        "iso42001": ["A.9.2"],
        "eu_ai_act": ["Art. 12(2)"],
        "nist_ai_rmf": ["GOVERN 6.1"],
    },
    {
        "control": "retention-and-deletion",
        "what": "Retention per tenant and kind of data, applied by an audited expiry job; a "
        "tenant's purge destroys its data keys first, then its objects, files and rows, and "
        "is closed by a check that finds nothing, with a tombstone in the platform's chain.",
        "evidence": ["audit/segment.jsonl", "security_tests.json"],
        "soc2": ["CC6.5", "C1.2"],
        "iso42001": [],
        "eu_ai_act": ["Art. 10(5)"],
        "nist_ai_rmf": ["GOVERN 1.7"],
    },
    {
        "control": "security-testing",
        "what": "Security suites on every build: isolation over every route and table, the "
        "authorisation matrix, token and SSO attacks, audit tampering.",
        "evidence": ["security_tests.json"],
        "soc2": ["CC7.1", "CC8.1"],
        "iso42001": ["A.6.2.4"],
        "eu_ai_act": [],
        "nist_ai_rmf": ["MEASURE 2.7"],
    },
)
