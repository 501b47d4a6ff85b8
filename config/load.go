package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	yamlv3 "go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable that overrides the file.
const EnvPrefix = "VECTIS_"

// Source says where configuration comes from, in increasing precedence.
type Source struct {
	// File is a YAML file with a root key "vectis"; empty means the
	// embedded defaults alone.
	File string
	// Environ is the process environment (os.Environ()); VECTIS_* variables
	// and the downward API's POD_NAME, POD_NAMESPACE and POD_IP are read.
	Environ []string
	// Sets are "key=value" overrides from the command line, keys relative to
	// "vectis." (e.g. "cluster.enabled=true").
	Sets []string
}

// Load reads the configuration from src over the defaults and validates it.
func Load(src Source) (*Config, error) {
	k := koanf.New(".")
	if src.File != "" {
		if err := k.Load(file.Provider(src.File), yaml.Parser()); err != nil {
			return nil, fmt.Errorf("load %s: %w", src.File, err)
		}
		for _, key := range k.Keys() {
			if !strings.HasPrefix(key, "vectis.") {
				return nil, fmt.Errorf("load %s: unexpected top-level key %q (everything lives under \"vectis:\")", src.File, key)
			}
		}
	}
	keys := knownKeys(reflect.TypeOf(Config{}), "")
	env := envMap(src.Environ)
	for name, value := range env {
		if !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		dotted := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, EnvPrefix), "_", "."))
		canon, ok := keys[dotted]
		if !ok {
			// Other tools share the prefix (VECTIS_PASSWORD for the CLI,
			// VECTIS_TOOLS_BIN for tests): only known keys are config.
			continue
		}
		if err := k.Set("vectis."+canon, value); err != nil {
			return nil, fmt.Errorf("environment %s: %w", name, err)
		}
	}
	for _, kv := range src.Sets {
		key, value, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--set %q: want key=value", kv)
		}
		canon, known := keys[strings.ToLower(key)]
		if !known {
			return nil, fmt.Errorf("--set %q: unknown key %q", kv, key)
		}
		if err := k.Set("vectis."+canon, value); err != nil {
			return nil, fmt.Errorf("--set %q: %w", kv, err)
		}
	}

	cfg := Default()
	dc := &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			// VECTIS_CLUSTER_ETCD_ENDPOINTS=a,b is a list.
			mapstructure.StringToSliceHookFunc(","),
		),
		WeaklyTypedInput: true,
		// A misspelt key must not be silently ignored.
		ErrorUnused: true,
	}
	if err := k.UnmarshalWithConf("vectis", &cfg, koanf.UnmarshalConf{Tag: "koanf", DecoderConfig: dc}); err != nil {
		return nil, fmt.Errorf("decode configuration: %w", err)
	}
	if err := cfg.applyEnvironment(env); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// applyEnvironment fills what the downward API and secret files provide.
func (c *Config) applyEnvironment(env map[string]string) error {
	if c.Cluster.PodName == "" {
		c.Cluster.PodName = env["POD_NAME"]
	}
	if c.Cluster.Namespace == "" {
		c.Cluster.Namespace = env["POD_NAMESPACE"]
	}
	if c.Node.Name == "" {
		c.Node.Name = c.Cluster.PodName
	}
	if c.Node.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node name: %w", err)
		}
		c.Node.Name = h
	}
	if c.Node.Address == "" {
		c.Node.Address = env["POD_IP"]
	}
	if b := c.Node.BindAddress; b != "" {
		// PeSIT listen addresses are shared by every node through the
		// store; each node applies its bind address when it starts them.
		c.API.Listen = BindHost(c.API.Listen, b)
	}
	if c.API.UsersFile != "" {
		users, err := readUsersFile(c.API.UsersFile)
		if err != nil {
			return fmt.Errorf("vectis.api.usersFile: %w", err)
		}
		c.API.Users = append(c.API.Users, users...)
	}
	if c.Store.URL == "" && c.Store.URLFile != "" {
		u, err := readSecretFile(c.Store.URLFile)
		if err != nil {
			return fmt.Errorf("vectis.store.urlFile: %w", err)
		}
		c.Store.URL = u
	}
	if c.Cluster.Etcd.Password == "" && c.Cluster.Etcd.PasswordFile != "" {
		p, err := readSecretFile(c.Cluster.Etcd.PasswordFile)
		if err != nil {
			return fmt.Errorf("vectis.cluster.etcd.passwordFile: %w", err)
		}
		c.Cluster.Etcd.Password = p
	}
	return nil
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// knownKeys maps every lower-cased leaf key path of t (by koanf tag) to its
// canonical spelling, so that VECTIS_CLUSTER_LABELKEY finds cluster.labelKey.
// Slices of structs are not addressable from the environment.
func knownKeys(t reflect.Type, prefix string) map[string]string {
	out := map[string]string{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("koanf")
		if tag == "" {
			continue
		}
		path := tag
		if prefix != "" {
			path = prefix + "." + tag
		}
		ft := f.Type
		if ft.Kind() == reflect.Struct && ft.PkgPath() == t.PkgPath() {
			for k, v := range knownKeys(ft, path) {
				out[k] = v
			}
			continue
		}
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			continue
		}
		out[strings.ToLower(path)] = path
	}
	return out
}

// BindHost puts host into addr when addr names a port only.
func BindHost(addr, host string) string {
	h, port, err := net.SplitHostPort(addr)
	if err != nil || h != "" {
		return addr
	}
	return net.JoinHostPort(host, port)
}

// readUsersFile reads admin API users from a YAML list of
// {name, passwordHash, role}, as mounted from a Kubernetes Secret.
func readUsersFile(path string) ([]User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var users []User
	dec := yamlv3.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&users); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return users, nil
}
