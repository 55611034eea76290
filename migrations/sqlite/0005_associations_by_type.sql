-- Inbound-call reads a contact's companies on every logged call. Keyed (from_id, to_id,
-- type_id), that read walked all of the contact's associations, its calls included, so it
-- slowed down with every call the contact made. With the target type second in the key it is
-- one short range.
CREATE TABLE associations_by_type (
    from_id    INTEGER NOT NULL,
    to_id      INTEGER NOT NULL,
    type_id    INTEGER NOT NULL,
    portal_id  INTEGER NOT NULL,
    from_type  TEXT NOT NULL,
    to_type    TEXT NOT NULL,
    category   TEXT NOT NULL,
    PRIMARY KEY (from_id, to_type, to_id, type_id)
) WITHOUT ROWID;
INSERT INTO associations_by_type (from_id, to_id, type_id, portal_id, from_type, to_type, category)
    SELECT from_id, to_id, type_id, portal_id, from_type, to_type, category FROM associations;
DROP TABLE associations;
ALTER TABLE associations_by_type RENAME TO associations;
