package clientdb

import (
	"encoding/json"
	"fmt"
)

// Clients implements [Tx.Clients].
func (t *boltTx) Clients(after string, fn func(*Client) (more bool, err error)) error {
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
