"""The FACTURATION producer: an invoice event every second (by default) for a customer of the customer service."""
