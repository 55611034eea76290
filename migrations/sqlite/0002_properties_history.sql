-- Custom properties created through the properties API, per portal and object type.
CREATE TABLE custom_properties (
    portal_id    INTEGER NOT NULL,
    object_type  TEXT NOT NULL,
    name         TEXT NOT NULL,
    definition   TEXT NOT NULL,  -- the property as JSON (label, type, fieldType, groupName, options, ...)
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (portal_id, object_type, name)
) WITHOUT ROWID;

-- Every value a property has held, for propertiesWithHistory.
CREATE TABLE property_history (
    object_id    INTEGER NOT NULL,
    name         TEXT NOT NULL,
    value        TEXT NOT NULL,
    timestamp    INTEGER NOT NULL,
    source_type  TEXT NOT NULL
);
CREATE INDEX property_history_object ON property_history(object_id, name, timestamp);
