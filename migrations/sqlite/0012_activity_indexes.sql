-- Activity is read by circle id (see circle_ids) and by element; the index
-- on the circle's slug was only ever written, one more B-tree insert for
-- every event (and each websocket connection records two).
DROP INDEX IF EXISTS activity_circle;
