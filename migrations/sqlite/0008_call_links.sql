-- A record's row to a call (contact → call, company → call) is no longer stored: it landed on a
-- random leaf of this table for every logged call, and was most of the pages each call wrote.
-- The call's row stays, and the server derives the record's side from it in memory
-- (src/store/call_links.rs). A record's row without the call's row becomes one first.
INSERT OR IGNORE INTO associations (from_id, to_id, type_id, portal_id, from_type, to_type, category)
    SELECT to_id, from_id, CASE from_type WHEN '0-1' THEN 194 ELSE 182 END, portal_id, to_type, from_type, category
    FROM associations WHERE to_type = '0-48' AND from_type IN ('0-1', '0-2');
DELETE FROM associations WHERE to_type = '0-48' AND from_type IN ('0-1', '0-2');
