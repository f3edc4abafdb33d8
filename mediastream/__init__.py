"""Twilio Media Streams over Django Channels: the consumer, speech in and speech out."""
