// Command trivydb writes a tiny but real Trivy vulnerability DB (schema 2) for the tests.
//
// The public DB cannot be downloaded here, so the tests plant advisories for packages
// really present in their image. Layout (as trivy-db v2 stores it, bbolt):
//
//	"<platform>" / "<source package>" / "<advisory id>" -> {"FixedVersion": ..., "Severity": n}
//	"vulnerability" / "<advisory id>"                    -> {"Title", "Severity", "VendorSeverity", ...}
//	"data-source" / "<platform>"                         -> {"ID", "Name", "URL"}
//
// beside metadata.json {"Version": 2, "NextUpdate", "UpdatedAt", "DownloadedAt"}.
// Usage: trivydb -spec spec.json -out DIR
package main

import (
	"encoding/json"
	"flag"
	"log"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

type advisory struct {
	Platform     string `json:"platform"`
	Package      string `json:"package"`
	ID           string `json:"id"`
	FixedVersion string `json:"fixed_version"`
	Severity     string `json:"severity"`
	Title        string `json:"title"`
}

type spec struct {
	UpdatedAt  time.Time  `json:"updated_at"`
	NextUpdate time.Time  `json:"next_update"`
	Advisories []advisory `json:"advisories"`
}

var severities = map[string]int{"UNKNOWN": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}

func put(tx *bolt.Tx, path []string, key string, value any) error {
	b, err := tx.CreateBucketIfNotExists([]byte(path[0]))
	if err != nil {
		return err
	}
	for _, name := range path[1:] {
		if b, err = b.CreateBucketIfNotExists([]byte(name)); err != nil {
			return err
		}
	}
	data, err := json.Marshal(value)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), data)
}

func write(tx *bolt.Tx, a advisory) error {
	level, ok := severities[a.Severity]
	if !ok {
		log.Fatalf("%s: unknown severity %q", a.ID, a.Severity)
	}
	adv := map[string]any{"Severity": level}
	if a.FixedVersion != "" {
		adv["FixedVersion"] = a.FixedVersion
	}
	if err := put(tx, []string{a.Platform, a.Package}, a.ID, adv); err != nil {
		return err
	}
	vuln := map[string]any{
		"Title":          a.Title,
		"Description":    "Planted by imagekit's tests; not a real vulnerability.",
		"Severity":       a.Severity,
		"VendorSeverity": map[string]int{"debian": level, "nvd": level},
	}
	if err := put(tx, []string{"vulnerability"}, a.ID, vuln); err != nil {
		return err
	}
	source := map[string]string{"ID": "debian", "Name": "Debian Security Tracker", "URL": "https://example.invalid"}
	return put(tx, []string{"data-source"}, a.Platform, source)
}

func main() {
	specPath := flag.String("spec", "", "JSON spec of the advisories to plant")
	out := flag.String("out", "", "directory to write trivy.db and metadata.json into")
	flag.Parse()
	if *specPath == "" || *out == "" {
		log.Fatal("usage: trivydb -spec spec.json -out DIR")
	}
	raw, err := os.ReadFile(*specPath)
	if err != nil {
		log.Fatal(err)
	}
	var s spec
	if err = json.Unmarshal(raw, &s); err != nil {
		log.Fatalf("%s: %v", *specPath, err)
	}
	if err = os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	dbPath := filepath.Join(*out, "trivy.db")
	_ = os.Remove(dbPath)
	db, err := bolt.Open(dbPath, 0o644, nil)
	if err != nil {
		log.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, a := range s.Advisories {
			if err := write(tx, a); err != nil {
				return err
			}
		}
		return nil
	})
	if closeErr := db.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		log.Fatal(err)
	}
	meta := map[string]any{
		"Version":      2,
		"NextUpdate":   s.NextUpdate,
		"UpdatedAt":    s.UpdatedAt,
		"DownloadedAt": s.UpdatedAt,
	}
	data, err := json.Marshal(meta)
	if err != nil {
		log.Fatal(err)
	}
	if err = os.WriteFile(filepath.Join(*out, "metadata.json"), data, 0o644); err != nil {
		log.Fatal(err)
	}
}
