"""The billing service: full bills built from the customer and inventory services."""
