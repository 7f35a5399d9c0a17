"""Development tools for identity-webhooks: never in the wheel or the image."""
