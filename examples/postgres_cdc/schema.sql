-- The example's source table and a few rows (the snapshot reads them).
CREATE TABLE IF NOT EXISTS orders (
    id bigint PRIMARY KEY,
    customer text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    placed timestamptz NOT NULL DEFAULT now()
);
INSERT INTO orders (id, customer, amount)
SELECT g, 'customer-' || (g % 7), (g % 100) + 0.5 FROM generate_series(1, 1000) g
ON CONFLICT (id) DO NOTHING;
