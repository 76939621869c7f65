package clientdb

import "time"

// Disable implements [Tx.Disable].
func (t *boltTx) Disable(id string, now time.Time) (*Client, error) {
	return setDisabled(t, id, now.Unix())
}

// Enable implements [Tx.Enable].
func (t *boltTx) Enable(id string) (*Client, error) {
	return setDisabled(t, id, 0)
}

// setDisabled sets a live client's disabled time, keeping an earlier one
// when disabling, and stores it.
func setDisabled(t Tx, id string, at int64) (*Client, error) {
	c, err := t.Client(id)
	if err != nil {
		return nil, err
	}
	if at != 0 && c.DisabledAt != 0 {
		return c, nil
	}
	c.DisabledAt = at
	return c, t.Put(c)
}
