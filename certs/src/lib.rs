//! Certificate issuing for the webhook.
