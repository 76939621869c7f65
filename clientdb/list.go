package clientdb

import (
	"encoding/json"
	"fmt"
)

// Clients calls fn for each live client, disabled ones included, in the
// byte order of their IDs, starting with the first ID after the given one
// ("" starts at the first client). The ID need not belong to a stored
// client, so a listing can resume after a client that was deleted
// meanwhile. It stops when fn returns more false or an error, and returns
// that error.
//
// Each client is decoded afresh and belongs to fn. In a read transaction
// the writer waits until Clients returns, so callers that page through a
// large store should stop after a bounded number of clients.
func (t *Tx) Clients(after string, fn func(*Client) (more bool, err error)) error {
	b := t.clients()
	if b == nil {
		return nil
	}

	c := b.Cursor()
	k, v := c.First()
	if after != "" {
		// Seek lands on the ID itself or the first one after it.
		k, v = c.Seek([]byte(after))
		if k != nil && string(k) == after {
			k, v = c.Next()
		}
	}
	for ; k != nil; k, v = c.Next() {
		var cl Client
		if err := json.Unmarshal(v, &cl); err != nil {
			return fmt.Errorf("decoding client %q: %w", k, err)
		}
		more, err := fn(&cl)
		if err != nil || !more {
			return err
		}
	}
	return nil
}
