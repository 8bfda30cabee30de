"""The example consumer services: `inventory` (product.#) and `orders` (sales_order.#)."""
