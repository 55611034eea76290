-- The idProperty lookups (a contact's email, a company's domain, a call's external id) and the
-- duplicate-email check on every contact create read these; without an index each one scanned
-- the portal, so creating contacts slowed down as the CRM grew.
CREATE INDEX objects_email ON objects(portal_id, object_type, json_extract(properties, '$.email'));
CREATE INDEX objects_domain ON objects(portal_id, object_type, json_extract(properties, '$.domain'));
CREATE INDEX objects_external_id ON objects(portal_id, object_type, json_extract(properties, '$.hs_call_external_id'));
