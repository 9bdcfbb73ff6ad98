-- Example of another bank's schema ("core banking" in a schema of its own), mapped onto the engine's
-- events by connectors/mappings/core_bank.toml. It differs from the reference schema
-- (connectors/bank_schema.sql) the way real core systems do:
--
--   * its own PostgreSQL schema, core: Debezium writes <topic.prefix>.core.<table>;
--   * text keys for clients and merchants, a composite (branch, number) key for accounts;
--   * money as integer minor units (cents), currency codes in lower case;
--   * statuses and products as codes, times as epoch seconds or milliseconds, a date as DD/MM/YYYY text;
--   * facts the engine can use but this bank does not keep: no KYC level, phone or country for
--     clients, no opening date or currency for accounts, no device, IP or counterparty on payments,
--     no logins or profile changes. The mapping leaves them out; the engine treats them as unknown.
--
-- Every statement is idempotent, so this file can be run again on a database that has it.
-- REPLICA IDENTITY FULL so that updates carry their "before" image (the previous payment status).

CREATE SCHEMA IF NOT EXISTS core;

CREATE TABLE IF NOT EXISTS core.clients (
    client_ref       TEXT PRIMARY KEY,                -- e.g. 'C-000123'
    display_name     TEXT   NOT NULL,
    email            TEXT   NOT NULL,                 -- as the client typed it (mixed case)
    onboarded_epoch  BIGINT NOT NULL                  -- seconds since 1970-01-01 UTC
);

CREATE TABLE IF NOT EXISTS core.accounts (
    branch        TEXT     NOT NULL,                  -- branch code, e.g. 'LDN' (never contains '/')
    number        BIGINT   NOT NULL,                  -- account number within the branch
    client_ref    TEXT     NOT NULL REFERENCES core.clients (client_ref),
    product_code  TEXT     NOT NULL,                  -- CUR current | SAV savings | WAL wallet
    state_code    SMALLINT NOT NULL,                  -- 1 open | 2 blocked | 9 closed
    PRIMARY KEY (branch, number)
);

CREATE TABLE IF NOT EXISTS core.merchants (
    merchant_ref  TEXT PRIMARY KEY,                   -- e.g. 'M-GROCER'
    trading_name  TEXT    NOT NULL,
    category      CHAR(4) NOT NULL,                   -- ISO 18245 merchant category code
    country       CHAR(2) NOT NULL,                   -- ISO 3166 alpha-2, lower case
    listed_ms     BIGINT  NOT NULL                    -- milliseconds since 1970-01-01 UTC
);

-- Every payment is a card payment to a merchant: the table has no kind column.
CREATE TABLE IF NOT EXISTS core.payments (
    payment_no    BIGINT PRIMARY KEY,
    branch        TEXT        NOT NULL,               -- payer account (branch, number)
    number        BIGINT      NOT NULL,
    merchant_ref  TEXT        REFERENCES core.merchants (merchant_ref),
    amount_minor  BIGINT      NOT NULL CHECK (amount_minor >= 0),  -- cents
    currency      TEXT        NOT NULL,               -- ISO 4217, lower case: 'eur'
    status_code   SMALLINT    NOT NULL,               -- 0 pending | 1 authorised | 2 declined | 3 booked | 4 reversed
    booked_at     TIMESTAMPTZ NOT NULL,
    FOREIGN KEY (branch, number) REFERENCES core.accounts (branch, number)
);

-- Disputes and fraud cases, opened days after the payment (the engine's late labels).
CREATE TABLE IF NOT EXISTS core.chargebacks (
    case_no      BIGINT PRIMARY KEY,
    payment_no   BIGINT NOT NULL REFERENCES core.payments (payment_no),
    reason_code  TEXT   NOT NULL,                     -- FR fraud confirmed | CB chargeback | NF no fraud
    opened_on    TEXT   NOT NULL                      -- 'DD/MM/YYYY'
);

ALTER TABLE core.clients     REPLICA IDENTITY FULL;
ALTER TABLE core.accounts    REPLICA IDENTITY FULL;
ALTER TABLE core.merchants   REPLICA IDENTITY FULL;
ALTER TABLE core.payments    REPLICA IDENTITY FULL;
ALTER TABLE core.chargebacks REPLICA IDENTITY FULL;
