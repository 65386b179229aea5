package admin

import (
	"context"
	"fmt"
	"strings"
)

// ShowBackends lists the backends of the running configuration.
func (c *Client) ShowBackends(ctx context.Context) ([]string, error) {
	ans, err := c.query(ctx, "show backend", errorAnswer)
	if err != nil {
		return nil, err
	}
	return parseBackends(ans)
}

// ShowStat returns the stats rows: all of them when backend is "", else
// only that backend's servers (`show stat <backend> 4 -1`).
func (c *Client) ShowStat(ctx context.Context, backend string) ([]Stat, error) {
	cmd := "show stat"
	if backend != "" {
		if err := checkArg("backend", backend); err != nil {
			return nil, err
		}
		cmd += " " + backend + " 4 -1"
	}
	ans, err := c.query(ctx, cmd, errorAnswer)
	if err != nil {
		return nil, err
	}
	return parseStat(ans)
}

// GetMap looks key up in the map loaded from mapFile (the path exactly as
// HAProxy's configuration names it). A map HAProxy did not load is a
// *CommandError that is ErrUnknownMap.
func (c *Client) GetMap(ctx context.Context, mapFile, key string) (MapLookup, error) {
	if err := checkArgs("map", mapFile, "key", key); err != nil {
		return MapLookup{}, err
	}
	ans, err := c.query(ctx, "get map "+mapFile+" "+key, func(a string) bool {
		return !strings.HasPrefix(a, "type=")
	})
	if err != nil {
		return MapLookup{}, err
	}
	return parseGetMap(ans)
}

// SetMap changes the value of key; a key the map does not hold is a
// *CommandError that is ErrEntryNotFound (use AddMap).
func (c *Client) SetMap(ctx context.Context, mapFile, key, value string) error {
	if err := checkArgs("map", mapFile, "key", key, "value", value); err != nil {
		return err
	}
	return c.Do(ctx, "set map "+mapFile+" "+key+" "+value)
}

// AddMap adds an entry. HAProxy does not refuse a duplicate key: look it up
// first and use SetMap when it is there.
func (c *Client) AddMap(ctx context.Context, mapFile, key, value string) error {
	if err := checkArgs("map", mapFile, "key", key, "value", value); err != nil {
		return err
	}
	return c.Do(ctx, "add map "+mapFile+" "+key+" "+value)
}

// DelMap removes every entry of key.
func (c *Client) DelMap(ctx context.Context, mapFile, key string) error {
	if err := checkArgs("map", mapFile, "key", key); err != nil {
		return err
	}
	return c.Do(ctx, "del map "+mapFile+" "+key)
}

// ShowMaps lists the maps HAProxy has loaded.
func (c *Client) ShowMaps(ctx context.Context) ([]MapInfo, error) {
	ans, err := c.query(ctx, "show map", errorAnswer)
	if err != nil {
		return nil, err
	}
	return parseMapList(ans)
}

func checkArgs(nameValue ...string) error {
	for i := 0; i+1 < len(nameValue); i += 2 {
		if err := checkArg(nameValue[i], nameValue[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// MaxWeight is the largest server weight HAProxy accepts.
const MaxWeight = 256

// SetWeight sets the weight of server in backend (`set weight
// <backend>/<server> <weight>`), an absolute weight 0-MaxWeight. HAProxy
// answers nothing on success; an unknown backend or server is a
// *CommandError ("No such backend.", "No such server.").
func (c *Client) SetWeight(ctx context.Context, backend, server string, weight int) error {
	if err := checkArgs("backend", backend, "server", server); err != nil {
		return err
	}
	if weight < 0 || weight > MaxWeight {
		return fmt.Errorf("%w: weight %d is not in 0-%d", ErrBadArgument, weight, MaxWeight)
	}
	return c.Do(ctx, fmt.Sprintf("set weight %s/%s %d", backend, server, weight))
}

// GetWeight reads the weight of server in backend (`get weight
// <backend>/<server>`): the one in force and the one of the configuration.
func (c *Client) GetWeight(ctx context.Context, backend, server string) (Weight, error) {
	if err := checkArgs("backend", backend, "server", server); err != nil {
		return Weight{}, err
	}
	ans, err := c.query(ctx, "get weight "+backend+"/"+server, errorAnswer)
	if err != nil {
		return Weight{}, err
	}
	return parseGetWeight(ans)
}
