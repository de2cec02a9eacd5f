-- 0024: providers that speak Anthropic's Messages API at a base URL of the tenant's own (a
-- corporate proxy, a compatible server), as openai_compatible does for OpenAI's.
ALTER TABLE tenantguard.model_providers DROP CONSTRAINT model_providers_kind_check;
ALTER TABLE tenantguard.model_providers ADD CONSTRAINT model_providers_kind_check
    CHECK (kind IN ('openai', 'anthropic', 'mistral', 'ollama', 'vllm', 'openai_compatible',
                    'anthropic_compatible'));
