"""Third-party API keys (Stripe, OpenAI, ...): the provider interface the key_rotation runbook
speaks, and a generic HTTP provider. Secret values stay inside the activity that handles them."""
