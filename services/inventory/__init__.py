"""The inventory service: products on sale, their prices and their stock."""
