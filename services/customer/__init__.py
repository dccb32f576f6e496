"""The customer service: who bills are made out to."""
