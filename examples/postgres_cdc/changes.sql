-- Changes while the pipeline runs: each shows up in orders_by_customer.
INSERT INTO orders (id, customer, amount) VALUES (5001, 'customer-new', 10.00);
UPDATE orders SET amount = amount + 100 WHERE id <= 10;
UPDATE orders SET customer = 'customer-new' WHERE id = 11;
DELETE FROM orders WHERE customer = 'customer-3';
