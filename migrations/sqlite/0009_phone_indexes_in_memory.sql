-- Phone search candidates come from the in-memory caller-ID index (src/callerid/index.rs,
-- `candidates`), which holds every stored number by E.164 and by national key. These two
-- indexes answered the same questions from disk; every imported row landed at a random place in
-- each, so a bulk load left them out and rebuilt them afterwards, at about 1 s per million rows
-- each.
DROP INDEX IF EXISTS phones_e164;
DROP INDEX IF EXISTS phones_national;
