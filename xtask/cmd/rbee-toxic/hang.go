package main

import "github.com/Shopify/toxiproxy/v2/toxics"

// hangToxic drops the stream's data and keeps the connection open even
// after the sender closed its side: the reader waits forever, as behind a
// peer that stopped writing without closing. toxiproxy's timeout toxic with
// timeout 0 drops data too but passes the sender's close on, so a reader
// of a short response sees a prompt EOF instead of a hang. Removing the
// toxic closes the stream (Cleanup), as removing toxiproxy's timeout does.
type hangToxic struct{}

func (hangToxic) Pipe(stub *toxics.ToxicStub) {
	in := stub.Input
	for {
		select {
		case <-stub.Interrupt:
			return
		case c, ok := <-in:
			if c == nil || !ok {
				in = nil // the sender closed: stop reading, keep the connection
			}
			// Data is dropped on the ground.
		}
	}
}

func (hangToxic) Cleanup(stub *toxics.ToxicStub) { stub.Close() }

func init() { toxics.Register("hang", new(hangToxic)) }
