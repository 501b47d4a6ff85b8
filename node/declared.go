package node

import (
	"strings"

	"github.com/vectis-ft/vectis/api"
	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/store"
)

// declared turns the configuration file's PeSIT section into the store's
// declarations, applied idempotently at start-up.
func declared(cfg *config.Config) store.Declared {
	var d store.Declared
	for _, s := range cfg.PeSIT.Servers {
		auto := true
		if s.AutoStart != nil {
			auto = *s.AutoStart
		}
		d.Servers = append(d.Servers, store.Server{
			ID: s.ID, Listen: s.Listen, MaxSessions: s.MaxSessions, AutoStart: auto,
			TLS: store.ServerTLS{Listen: s.TLS.Listen, CertFile: s.TLS.CertFile, KeyFile: s.TLS.KeyFile, ClientCAFile: s.TLS.ClientCAFile,
				ClientAuth: s.TLS.ClientAuth},
		})
	}
	for _, p := range cfg.PeSIT.Partners {
		d.Partners = append(d.Partners, declaredPartner(p))
	}
	for _, f := range cfg.PeSIT.Files {
		vf := store.VirtualFile{
			ID: f.ID, Description: f.Description, Direction: store.FileDirection(f.Direction),
			ReceiveDir: f.ReceiveDir, NamePattern: f.NamePattern, SendDir: f.SendDir,
			Overwrite: f.Overwrite, MaxSize: f.MaxSize, RecordLength: f.RecordLength,
			RecordFormat: store.RecordFormat(f.RecordFormat), DataCode: store.DataCode(f.DataCode),
		}
		if vf.RecordFormat == "" {
			vf.RecordFormat = store.RecordVariable
		}
		if vf.DataCode == "" {
			vf.DataCode = store.DataBinary
		}
		d.Files = append(d.Files, vf)
	}
	return d
}

// declaredPartner is the one projection of a configured partner onto the
// store; TestPartnerProjections fails when a field is not carried.
func declaredPartner(p config.Partner) store.DeclaredPartner {
	access := store.Access(p.Access)
	if access == "" {
		access = store.AccessBoth
	}
	var fps []string
	for _, fp := range p.CertSHA256 {
		fps = append(fps, strings.ToLower(strings.ReplaceAll(fp, ":", "")))
	}
	return store.DeclaredPartner{
		Partner: store.Partner{
			ID: p.ID, Description: p.Description, Enabled: !p.Disabled, Access: access,
			Files: p.Files, MaxSessions: p.MaxSessions, CertCN: p.CertCN, CertSHA256: fps,
			MultiArticle: p.MultiArticle, Segment: p.Segment, Strict: p.Strict,
		},
		Password: p.Password, PasswordHash: p.PasswordHash,
	}
}

func staticUsers(users []config.User) []api.StaticUser {
	out := make([]api.StaticUser, 0, len(users))
	for _, u := range users {
		out = append(out, api.StaticUser{Name: u.Name, Password: u.Password, PasswordHash: u.PasswordHash, Role: store.Role(u.Role)})
	}
	return out
}
