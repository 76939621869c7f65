package clientdb

import "time"

// Disable marks a live client disabled from now, keeping an earlier
// disable time, and returns it. It returns [ErrNotFound] or [ErrDeleted]
// when there is no live client with that ID.
func (t *Tx) Disable(id string, now time.Time) (*Client, error) {
	return t.setDisabled(id, now.Unix())
}

// Enable clears a client's disabled mark and returns it. It returns
// [ErrNotFound] or [ErrDeleted] when there is no live client with that ID.
func (t *Tx) Enable(id string) (*Client, error) {
	return t.setDisabled(id, 0)
}

func (t *Tx) setDisabled(id string, at int64) (*Client, error) {
	b := t.clients()
	if b == nil || !t.tx.Writable() {
		return nil, errReadOnly
	}
	c, err := t.Client(id)
	if err != nil {
		return nil, err
	}
	if at != 0 && c.DisabledAt != 0 {
		return c, nil
	}
	c.DisabledAt = at
	return c, t.put(b, c)
}
