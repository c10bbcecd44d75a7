-- Expos are published as codes (GroupShowcasedAtExpo v2): the expo from the catalogue and the
-- regency where it was held. Every expo recorded so far came from a version 1 event, whose free
-- text the upcaster drops (expo "other", place unknown); the rows follow, so a rebuild from the
-- event store gives the same table.
UPDATE group_activities SET title = 'other', place = NULL WHERE kind = 'expo';
