-- Each idProperty index now covers only the type that carries the property. Before, every
-- logged call and every imported contact computed all three JSON expressions and filed two
-- useless NULL entries: three parses of the properties JSON per row on the single writer.
-- SQLite uses a partial index only when the query repeats its WHERE term literally, so the
-- queries spell the type as a literal (`store/sqlite.rs` record_by_property, the call
-- logger's externalCallId lookup).
DROP INDEX objects_email;
DROP INDEX objects_domain;
DROP INDEX objects_external_id;
CREATE INDEX objects_email ON objects(portal_id, json_extract(properties, '$.email'))
    WHERE object_type = '0-1';
CREATE INDEX objects_domain ON objects(portal_id, json_extract(properties, '$.domain'))
    WHERE object_type = '0-2';
CREATE INDEX objects_external_id ON objects(portal_id, json_extract(properties, '$.hs_call_external_id'))
    WHERE object_type = '0-48';
