#!/usr/bin/perl

# sync_limit_req zones in shared memory: a full zone evicts the least
# recently used keys (as limit_req does) and logs it, locally and when the
# keys come from a peer; a reload keeps the zone's state, refuses a changed
# key (as limit_req does) and refuses to toggle "sync".

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Nginx::Cluster;

###############################################################################

my $c = Test::Nginx::Cluster->new(2)->has(qw/http stream zone_sync/)->plan(14);

my $template = <<'EOF';

%%TEST_GLOBALS%%

events {
}

stream {
    %%TEST_GLOBALS_STREAM%%

    server {
        listen 127.0.0.1:%%NODE_SYNC%%;
        zone_sync;
        %%ALL_SYNC_SERVERS%%
        zone_sync_interval 10ms;
        zone_sync_connect_retry_interval 100ms;
    }
}

http {
    %%TEST_GLOBALS_HTTP%%

    access_log off;

    sync_limit_req_zone $arg_k zone=small:32k rate=1r/m;
    sync_limit_req_zone @KEY@ zone=shared:32k rate=1r/m@SYNC@;

    server {
        listen 127.0.0.1:%%NODE_HTTP%%;

        location /small { sync_limit_req zone=small; empty_gif; }
        location /shared { sync_limit_req zone=shared; empty_gif; }
    }
}

EOF

sub conf {
	my (%o) = @_;
	my $s = $template;
	$s =~ s/\@KEY\@/$o{key} \/\/ '$arg_k'/e;
	$s =~ s/\@SYNC\@/$o{sync} \/\/ ' sync'/e;
	return $s;
}

$c->write_file_expand(conf());
$c->run();

###############################################################################

sub code {
	my ($i, $uri) = @_;
	my $r = $c->http_get($i, $uri) // '';
	return $r =~ m!^HTTP/1\.. (\d+)! ? $1 : 0;
}

sub log_of { $c->node($_[0])->read_file('error.log') }

# a full zone evicts the least recently used keys

my $first = code(0, '/small?k=first') . ' ' . code(0, '/small?k=first');
is($first, '200 503', 'a key is limited');

my @codes = map { code(0, "/small?k=key$_") } 1 .. 600;
is(scalar(grep { $_ != 200 } @codes), 0, 'every new key admitted in a full zone');
like(log_of(0), qr/\[warn\] .*sync_limit_req zone "small" is full, evicted \d+ least recently used keys/,
	'eviction logged');
is(code(0, '/small?k=first'), 200, 'the oldest key was evicted');
is(code(0, '/small?k=key600'), 503, 'a recent key was kept');

# keys received from a peer fill node 1's zone: it evicts as well

code(0, "/shared?k=peer$_") for 1 .. 600;
ok(wait_for(sub { log_of(1) =~ /sync_limit_req zone "shared" is full, evicted/ },
	timeout => 10), 'keys from a peer evict too');
ok(wait_for(sub { code(1, '/shared?k=peer600') == 503 }, timeout => 10),
	'the latest key from the peer is limited on node 1');
unlike(log_of(1), qr/zone "shared" is too small/, 'no key refused');

# reloads

ok($c->reload_node(0), 'reload');
is(code(0, '/small?k=key600'), 503, 'state kept across a reload');

$c->node(0)->write_file_expand('nginx.conf',
	$c->expand_node(0, conf(key => '$arg_x')));
ok(!$c->node(0)->reload(), 'reload with a changed key refused');
like(log_of(0), qr/sync_limit_req "shared" uses the "\$arg_x" key while previously it used the "\$arg_k" key/,
	'changed key message');

$c->node(0)->write_file_expand('nginx.conf',
	$c->expand_node(0, conf(sync => '')));
ok(!$c->node(0)->reload(), 'reload toggling sync refused');
like(log_of(0), qr/sync_limit_req "shared" cannot change "sync" across a reload/,
	'toggled sync message');

$c->ignore_log(qr/\[emerg\]/);

###############################################################################
