-- A repost finds its call through objects_external_id (the call's hs_call_external_id), which
-- every call insert maintains anyway. This table cost every logged call one more random B-tree
-- insert, and kept pointing at calls after they were deleted.
DROP TABLE inbound_calls;
