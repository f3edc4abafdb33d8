"""Call records and Twilio webhooks."""
